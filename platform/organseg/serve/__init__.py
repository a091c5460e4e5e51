"""The Ray Serve ensemble graph: router (HTTP + gRPC ingress) → one ensemble per modality → members."""
