"""Training every ensemble member in parallel with Ray Train, and searching their hyper-parameters with Ray Tune."""
