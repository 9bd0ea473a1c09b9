"""Reading and writing images and datasets."""
