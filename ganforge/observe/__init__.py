"""What a user sees of a run: files written atomically, sample grids and plots, trackers,
samples and metrics during training, films, the HTML report and latent walks."""
