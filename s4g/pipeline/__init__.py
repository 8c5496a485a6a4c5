"""The image pipeline: decoding (images, jpeg), host transforms, the batched photometric
augmentation on the training device (augment, photoops), and the torch Datasets (dataset)."""
