"""Cloud hand-off: the registry's devices as AWS IoT and Azure IoT Hub DPS registrations."""

from keyfab.cloud._formats import (
    CloudDevice,
    Skipped,
    aws_template,
    azure_enrollment,
    azure_group,
    cloud_devices,
    registration_id,
    write_aws,
    write_azure,
)

__all__ = [
    "CloudDevice",
    "Skipped",
    "aws_template",
    "azure_enrollment",
    "azure_group",
    "cloud_devices",
    "registration_id",
    "write_aws",
    "write_azure",
]
