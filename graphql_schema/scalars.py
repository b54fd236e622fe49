import enum

import strawberry

from apps.accounts.models import Platform as PlatformChoices


@strawberry.enum(description="The mobile platform of a device or of the app asking.")
class Platform(enum.Enum):
    IOS = PlatformChoices.IOS.value
    ANDROID = PlatformChoices.ANDROID.value
