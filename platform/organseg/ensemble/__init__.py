"""The ensemble domain, Ray-free: a model directory's spec and members, the modality decision, the
assembly of a request's series into one input, inference and post-processing, and what a prediction
becomes (report, DICOM results). Ray and HTTP stay in :mod:`organseg.serve` and :mod:`organseg.train`."""
