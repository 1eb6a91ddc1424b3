"""Reading a competition's data: layouts, images, transforms, datasets, folds."""
