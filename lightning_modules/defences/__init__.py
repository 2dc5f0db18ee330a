"""Model-level defences around a trained classifier, in plain torch.

- :mod:`~lightning_modules.defences.blur`: Gaussian / median blur, a layer in front of the
  normaliser (``model.preprocessing``), seen by training, evaluation, attacks and exports.
- :mod:`~lightning_modules.defences.post_train`: post-train at inference, a copy of the model
  fine-tuned per input's class pair (evaluated by ``callbacks.PostTrainEvaluation``);
  :mod:`~lightning_modules.defences.pair_exchange` shares its fine-tuned pairs between processes.

Data-level defences (pre-generated sets, cross-model augmentation) wrap a datamodule instead
(``datamodules/``).
"""
