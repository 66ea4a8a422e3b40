"""DICOM PS3.15 Annex E, Table E.1-1: the Basic Application Level Confidentiality Profile, as data.

Each attribute keyword maps to the Basic Profile action code exactly as the standard writes it:

=====  ===========================================================================================
D      replace with a non-zero-length dummy value consistent with the VR
Z      replace with a zero-length value (or a dummy)
X      remove
K      keep
C      clean (replace identifying text with similar-meaning non-identifying text)
U      replace the UID with a non-zero-length UID that is internally consistent within the set
X/Z, X/D, Z/D, X/Z/D, X/Z/U*   "the first unless the second is needed to keep the IOD valid"
=====  ===========================================================================================

Without a per-IOD type table we resolve the compound codes toward validity (``resolve``): ``X/Z`` -> empty,
``X/D`` and ``Z/D`` and ``X/Z/D`` -> dummy, ``X/Z/U*`` -> recurse into the sequence and replace its UIDs.
Emptying a Type 3 attribute is permitted, so this never makes an object less valid than removal would, with one
exception: a *sequence* that is present must hold at least one item unless it is Type 2, so a compound code that
allows X on a sequence resolves to remove (``action_table``). ``IOD_REQUIRED`` lists the attributes whose plain
X would break IODs that make them Type 1/2 (checked with dicom3tools' ``dciodvfy``); PS3.15 E.1.1 lets us empty
(Z) or dummy (D) those instead, and an empty value discloses nothing.
Entries transcribed from the 2024 edition of PS3.15 (the Basic Profile column); retired curve/overlay groups
(50xx, 60xx) are removed by group (``REPEATING_GROUP_ACTIONS``).
"""

from __future__ import annotations

import re
from enum import Enum

from pydicom.datadict import dictionary_VR, tag_for_keyword


class Action(str, Enum):
    """A concrete action, after resolving the standard's compound codes."""

    REMOVE = "remove"
    EMPTY = "empty"
    DUMMY = "dummy"
    KEEP = "keep"
    CLEAN = "clean"
    UID = "uid"  # replace with a keyed pseudonym UID; for a sequence: recurse and replace the UIDs inside


# keyword -> Basic Profile code (Table E.1-1). Keep sorted by keyword.
BASIC_PROFILE: dict[str, str] = {
    "AccessionNumber": "Z",
    "AcquisitionComments": "X",
    "AcquisitionContextSequence": "X",
    "AcquisitionDate": "X/Z",
    "AcquisitionDateTime": "X/Z/D",
    "AcquisitionDeviceProcessingDescription": "X/D",
    "AcquisitionProtocolDescription": "X",
    "AcquisitionTime": "X/Z",
    "ActualHumanPerformersSequence": "X",
    "AdditionalPatientHistory": "X",
    "AdmissionID": "X",
    "AdmittingDate": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingTime": "X",
    "AffectedSOPInstanceUID": "X",
    "Allergies": "X",
    "Arbitrary": "X",
    "AuthorObserverSequence": "X",
    "BranchOfService": "X",
    "CassetteID": "X",
    "CommentsOnThePerformedProcedureStep": "X",
    "ConcatenationUID": "U",
    "ConfidentialityConstraintOnPatientDataDescription": "X",
    "ContentCreatorIdentificationCodeSequence": "X",
    "ContentCreatorName": "Z",
    "ContentDate": "Z/D",
    "ContentSequence": "X",
    "ContentTime": "Z/D",
    "ContextGroupExtensionCreatorUID": "U",
    "ContrastBolusAgent": "Z/D",
    "ContributionDescription": "X",
    "CountryOfResidence": "X",
    "CreatorVersionUID": "U",
    "CurrentPatientLocation": "X",
    "CustodialOrganizationSequence": "X",
    "DataSetTrailingPadding": "X",
    "DerivationDescription": "X",
    "DetectorID": "X",
    "DeviceSerialNumber": "X/Z/D",
    "DeviceUID": "U",
    "DigitalSignatureUID": "X",
    "DigitalSignaturesSequence": "X",
    "DimensionOrganizationUID": "U",
    "DischargeDiagnosisDescription": "X",
    "DistributionAddress": "X",
    "DistributionName": "X",
    "DoseReferenceUID": "U",
    "EthnicGroup": "X",
    "FailedSOPInstanceUIDList": "U",
    "FiducialUID": "U",
    "FillerOrderNumberImagingServiceRequest": "Z",
    "FrameComments": "X",
    "FrameOfReferenceUID": "U",
    "GantryID": "X",
    "GeneratorID": "X",
    "GraphicAnnotationSequence": "D",
    "HumanPerformerName": "X",
    "HumanPerformerOrganization": "X",
    "IconImageSequence": "X",
    "IdentifyingComments": "X",
    "ImageComments": "X",
    "ImagePresentationComments": "X",
    "ImagingServiceRequestComments": "X",
    "Impressions": "X",
    "InstanceCoercionDateTime": "X",
    "InstanceCreationDate": "X/D",
    "InstanceCreationTime": "X/Z/D",
    "InstanceCreatorUID": "U",
    "InstitutionAddress": "X",
    "InstitutionCodeSequence": "X/Z/D",
    "InstitutionName": "X/Z/D",
    "InstitutionalDepartmentName": "X",
    "InsurancePlanIdentification": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X",
    "InterpretationApproverSequence": "X",
    "InterpretationAuthor": "X",
    "InterpretationDiagnosisDescription": "X",
    "InterpretationIDIssuer": "X",
    "InterpretationRecorder": "X",
    "InterpretationText": "X",
    "InterpretationTranscriber": "X",
    "IrradiationEventUID": "U",
    "IssuerOfAdmissionID": "X",
    "IssuerOfPatientID": "X",
    "IssuerOfServiceEpisodeID": "X",
    "LargePaletteColorLookupTableUID": "U",
    "MAC": "X",
    "MediaStorageSOPInstanceUID": "U",
    "MedicalAlerts": "X",
    "MedicalRecordLocator": "X",
    "MilitaryRank": "X",
    "ModifiedAttributesSequence": "X",
    "ModifiedImageDescription": "X",
    "ModifyingDeviceID": "X",
    "ModifyingDeviceManufacturer": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "NamesOfIntendedRecipientsOfResults": "X",
    "Occupation": "X",
    "OperatorIdentificationSequence": "X",
    "OperatorsName": "X/Z/D",
    "OrderCallbackPhoneNumber": "X",
    "OrderEnteredBy": "X",
    "OrderEntererLocation": "X",
    "OriginalAttributesSequence": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "ParticipantSequence": "X",
    "PatientAddress": "X",
    "PatientAge": "X",
    "PatientBirthDate": "Z",
    "PatientBirthName": "X",
    "PatientBirthTime": "X",
    "PatientComments": "X",
    "PatientID": "Z",
    "PatientInstitutionResidence": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientMotherBirthName": "X",
    "PatientName": "Z",
    "PatientPrimaryLanguageCodeSequence": "X",
    "PatientPrimaryLanguageModifierCodeSequence": "X",
    "PatientReligiousPreference": "X",
    "PatientSex": "Z",
    "PatientSexNeutered": "X/Z",
    "PatientSize": "X",
    "PatientState": "X",
    "PatientTelephoneNumbers": "X",
    "PatientTransportArrangements": "X",
    "PatientWeight": "X",
    "PerformedLocation": "X",
    "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X",
    "PerformedStationAETitle": "X",
    "PerformedStationGeographicLocationCodeSequence": "X",
    "PerformedStationName": "X",
    "PerformedStationNameCodeSequence": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PersonAddress": "X",
    "PersonIdentificationCodeSequence": "D",
    "PersonName": "D",
    "PersonTelephoneNumbers": "X",
    "PhysicianApprovingInterpretation": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "PlacerOrderNumberImagingServiceRequest": "Z",
    "PlateID": "X",
    "PreMedication": "X",
    "PregnancyStatus": "X",
    "ProtocolName": "X/D",
    "ReasonForStudy": "X",
    "ReasonForTheImagingServiceRequest": "X",
    "ReferencedDigitalSignatureSequence": "X",
    "ReferencedFrameOfReferenceUID": "U",
    "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID": "U",
    "ReferencedImageSequence": "X/Z/U*",
    "ReferencedPatientAliasSequence": "X",
    "ReferencedPatientPhotoSequence": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPerformedProcedureStepSequence": "X/Z/D",
    "ReferencedSOPInstanceMACSequence": "X",
    "ReferencedSOPInstanceUID": "U",
    "ReferencedSOPInstanceUIDInFile": "U",
    "ReferencedStudySequence": "X/Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianTelephoneNumbers": "X",
    "RegionOfResidence": "X",
    "RelatedFrameOfReferenceUID": "U",
    "RequestAttributesSequence": "X",
    "RequestedContrastAgent": "X",
    "RequestedProcedureCodeSequence": "X",
    "RequestedProcedureComments": "X",
    "RequestedProcedureDescription": "X/Z",
    "RequestedProcedureID": "X",
    "RequestedProcedureLocation": "X",
    "RequestedSOPInstanceUID": "U",
    "RequestingPhysician": "X",
    "RequestingService": "X",
    "ResponsibleOrganization": "X",
    "ResponsiblePerson": "X",
    "ResultsComments": "X",
    "ResultsDistributionListSequence": "X",
    "ResultsIDIssuer": "X",
    "ReviewerName": "X/Z",
    "ScheduledHumanPerformersSequence": "X",
    "ScheduledPatientInstitutionResidence": "X",
    "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "ScheduledPerformingPhysicianName": "X",
    "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepEndDate": "X",
    "ScheduledProcedureStepEndTime": "X",
    "ScheduledProcedureStepLocation": "X",
    "ScheduledProcedureStepStartDate": "X",
    "ScheduledProcedureStepStartTime": "X",
    "ScheduledStationAETitle": "X",
    "ScheduledStationGeographicLocationCodeSequence": "X",
    "ScheduledStationName": "X",
    "ScheduledStationNameCodeSequence": "X",
    "ScheduledStudyLocation": "X",
    "ScheduledStudyLocationAETitle": "X",
    "SeriesDate": "X/D",
    "SeriesDescription": "X",
    "SeriesInstanceUID": "U",
    "SeriesTime": "X/D",
    "ServiceEpisodeDescription": "X",
    "ServiceEpisodeID": "X",
    "SmokingStatus": "X",
    "SOPInstanceUID": "U",
    "SourceImageSequence": "X/Z/U*",
    "SpecialNeeds": "X",
    "StationName": "X/Z/D",
    "StorageMediaFileSetUID": "U",
    "StudyComments": "X",
    "StudyDate": "Z",
    "StudyDescription": "X",
    "StudyID": "Z",
    "StudyIDIssuer": "X",
    "StudyInstanceUID": "U",
    "StudyTime": "Z",
    "SynchronizationFrameOfReferenceUID": "U",
    "TemplateExtensionCreatorUID": "U",
    "TemplateExtensionOrganizationUID": "U",
    "TextComments": "X",
    "TextString": "X",
    "TimezoneOffsetFromUTC": "X",
    "TopicAuthor": "X",
    "TopicKeywords": "X",
    "TopicSubject": "X",
    "TopicTitle": "X",
    "TransactionUID": "U",
    "UID": "U",
    "VerifyingObserverIdentificationCodeSequence": "Z",
    "VerifyingObserverName": "D",
    "VerifyingObserverSequence": "D",
    "VerifyingOrganization": "X",
    "VisitComments": "X",
}

# Retired repeating groups: curve data (50xx) and overlay comments/data/dates (60xx) are removed whole / by element.
REPEATING_GROUP_ACTIONS: dict[int, str] = {
    0x5000: "X",  # curve groups 50xx: Curve Data and Curve Date/Time are X; the rest is meaningless without them
    0x6000: "X",  # overlay groups 60xx: Overlay Data/Comments/Date/Time are X (an overlay may draw text); the
                  # remaining overlay attributes describe data that is gone, so the whole group goes
}

# Private attributes that PS3.15 Table E.3.10-1 lists as safe to keep (numeric acquisition parameters, no identity):
# (private creator, group, element offset within the block).
SAFE_PRIVATE: frozenset[tuple[str, int, int]] = frozenset({
    ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
    ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
    ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
    ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
    ("GEMS_PARM_01", 0x0043, 0x39),  # slop_int_6..9 (b-value on GE diffusion)
})

# keyword -> (code used instead of the Basic Profile's, why): attributes the profile removes (X) but an IOD makes
# Type 1 or 2, where removal would turn a valid object into an invalid one (PS3.15 E.1.1 allows Z/D for them).
IOD_REQUIRED: dict[str, tuple[str, str]] = {
    "AcquisitionContextSequence": ("Z", "Type 2 in the Acquisition Context module (DX, MG, IO, XA, US...)"),
    "ResponsiblePerson": ("Z", "Type 2C in the Patient module when the patient is an animal"),
    "ResponsibleOrganization": ("Z", "Type 2C in the Patient module when the patient is an animal"),
}

_RESOLVE = {
    "D": Action.DUMMY, "Z": Action.EMPTY, "X": Action.REMOVE, "K": Action.KEEP, "C": Action.CLEAN, "U": Action.UID,
    "X/Z": Action.EMPTY, "X/D": Action.DUMMY, "Z/D": Action.DUMMY, "X/Z/D": Action.DUMMY, "X/Z/U*": Action.UID,
}


def resolve(code: str) -> Action:
    """Turn a Table E.1-1 code (possibly compound) into the concrete action we apply (see module docstring)."""
    try:
        return _RESOLVE[code]
    except KeyError:
        raise ValueError(f"unknown Basic Profile action code {code!r}") from None


def action_table(profile: dict[str, str] | None = None) -> dict[int, Action]:
    """Tag (as int) -> concrete action, for fast lookup while walking a dataset."""
    table: dict[int, Action] = {}
    for keyword, code in (profile or BASIC_PROFILE).items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword known to pydicom")
        if profile is None and keyword in IOD_REQUIRED:
            code = IOD_REQUIRED[keyword][0]
        action = resolve(code)
        if "/" in code and code.startswith("X") and action in (Action.EMPTY, Action.DUMMY) \
                and dictionary_VR(tag) == "SQ":
            action = Action.REMOVE  # an empty sequence is valid only where Type 2 (those are in IOD_REQUIRED)
        table[int(tag)] = action
    return table


def repeating_group_action(tag: int) -> Action | None:
    """Action for curve (50xx) and overlay (60xx) elements, which the data dictionary lists by group mask."""
    group = tag >> 16
    if group & 1 == 0 and group & 0xFF00 in REPEATING_GROUP_ACTIONS and (group & 0x00FF) <= 0x1E:
        return resolve(REPEATING_GROUP_ACTIONS[group & 0xFF00])
    return None


# value representations whose values are plain codes, numbers, dates or UIDs (PS3.5 6.2): printable ASCII only
CODE_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
# the other text value representations: any character set, but no control bytes besides TAB, LF, FF, CR and ESC
TEXT_VRS = frozenset({"LO", "SH", "PN", "LT", "ST", "UT", "UC", "UR"})
_NOT_CODE = re.compile(rb"[^\x20-\x7e]")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")


def damaged_code_value(vr: str, raw: bytes) -> bool:
    """A kept text value holding bytes its VR never holds (NULs, tag and length bytes): its length field is
    corrupt and it swallowed the elements after it (names and IDs among them), so it must go, not be copied.
    Both de-identification paths use this rule (found by benchmarks/bench_fuzz.py)."""
    if vr in CODE_VRS:
        return _NOT_CODE.search(raw.rstrip(b"\x00 ")) is not None
    return vr in TEXT_VRS and _CONTROL.search(raw.rstrip(b"\x00 ")) is not None
