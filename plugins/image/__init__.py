"""The image family: convolutional networks (DCGAN, InfoGAN's, the seed's), image datasets
(MNIST/Fashion-MNIST IDX files, CIFAR-10, image folders, Hugging Face datasets, Stacked MNIST)
and image metrics (the MNIST classifier's, Stacked MNIST's modes, FID/IS/KID)."""
