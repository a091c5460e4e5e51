"""Hospital integration: organseg as a DICOM node (C-STORE in, DICOM-SEG out) and a DICOMweb client.

Pure cores (:mod:`.spool`, :mod:`.grouping`, :mod:`.node`) hold the logic; the network edges
(:mod:`.listener` for pynetdicom, :mod:`.delivery` for C-STORE/STOW-RS, :mod:`.dicomweb` for WADO-RS)
stay thin so the logic is testable without a PACS and the edges are tested against a real one. What
the node shares with the served graph lives below both: reading a received series
(:mod:`organseg.io.received`), keeping patient values out of messages (:mod:`organseg.io.privacy`),
assembling a request's series (:mod:`organseg.ensemble.assembly`) and building the DICOM results
(:mod:`organseg.ensemble.results`); a served model is reached through the one backend factory
(:mod:`organseg.serve.connect`, over :mod:`organseg.serve.client`) only.
"""
