"""Hospital integration: organseg as a DICOM node (C-STORE in, DICOM-SEG out) and a DICOMweb client.

Pure cores (:mod:`.spool`, :mod:`.series`, :mod:`.results`, :mod:`.node`) hold the logic; the network
edges (:mod:`.listener` for pynetdicom, :mod:`.delivery` for C-STORE/STOW-RS, :mod:`.dicomweb` for
WADO-RS) stay thin so the logic is testable without a PACS and the edges are tested against a real one.
"""
