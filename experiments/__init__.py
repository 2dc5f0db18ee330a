"""The ``advtrain`` command line and the YAML experiments."""
