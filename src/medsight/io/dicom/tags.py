"""Which header elements the reader uses: the parse of a native file keeps exactly these (``scan.FAST_TAGS``)."""

from __future__ import annotations

# Header fields copied into Provenance.acquisition when present (no patient identifiers among them).
ACQUISITION_KEYWORDS = (
    "KVP", "XRayTubeCurrent", "Exposure", "ExposureTime", "ConvolutionKernel", "FilterType", "SliceThickness",
    "SpacingBetweenSlices", "MagneticFieldStrength", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle",
    "EchoTrainLength", "ScanningSequence", "SequenceVariant", "SequenceName", "PulseSequenceName",
    "MRAcquisitionType", "ImagingFrequency", "PixelBandwidth", "ContrastBolusAgent", "ReconstructionDiameter",
    "ViewPosition", "PatientPosition", "DistanceSourceToDetector", "SoftwareVersions", "RescaleType",
    "PhotometricInterpretation", "BitsStored", "LossyImageCompression", "ImageType",
)
# Functional-group sequences in enhanced objects whose items may hold acquisition facts.
ACQUISITION_GROUPS = (
    "MRTimingAndRelatedParametersSequence", "MREchoSequence", "MRModifierSequence", "CTAcquisitionDetailsSequence",
    "CTExposureSequence", "CTReconstructionSequence", "CTXRayDetailsSequence", "PixelMeasuresSequence",
)
# Everything else scan, layout, pixels and provenance read from a dataset.
STRUCTURE_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
    "Manufacturer", "ManufacturerModelName", "ProtocolName", "BodyPartExamined", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "ImagerPixelSpacing",
    "NominalScannedPixelSpacing", "RescaleSlope", "RescaleIntercept", "Rows", "Columns", "NumberOfFrames",
    "SamplesPerPixel", "BitsAllocated", "HighBit", "PixelRepresentation", "PlanarConfiguration",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "PixelData", "FloatPixelData",
    "DoubleFloatPixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
)
FAST_TAGS = sorted(set(STRUCTURE_KEYWORDS + ACQUISITION_KEYWORDS + ACQUISITION_GROUPS))
