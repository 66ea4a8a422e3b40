"""Registration: align one study to another (rigid -> affine -> B-spline on SimpleITK), and follow-up: lesions
matched across time points with their change in size.

``engine`` holds everything that touches SimpleITK (conversion, the multi-resolution stages, resampling, Jacobian);
``register`` checks inputs, measures quality and writes the outputs of ``medsight register``; ``followup`` matches
lesions and classifies their change; ``followup_report`` builds the CSV, DICOM SEG/SR and evidence figure;
``followup_run`` ties them into ``medsight follow-up``.
"""
