"""organseg: Ray-native ensembles of CHAOS-winning networks for abdominal organ segmentation."""

__version__ = "0.1.0"
