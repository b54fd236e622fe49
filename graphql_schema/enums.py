"""Every enum of the API, made from the model choices it shows (never member by member): the GraphQL
names and values are the choices' member names, the stored values stay behind them. ErrorCode, the one
enum of the domain errors, is in errors.py."""

from __future__ import annotations

from apps.accounts.models import Platform as PlatformChoices
from apps.characters import models as characters
from apps.characters.photo_checks import Reason
from apps.generations import models as generations
from apps.purchases import models as purchases
from apps.purchases.stores import SubscriptionState
from apps.storage import models as storage
from apps.trends import models as trends

from .toolkit import choices_enum

Platform = choices_enum(
    PlatformChoices, name="Platform", description="The mobile platform of a device or of the app asking."
)

# Videos: shared by trends and generations.
AspectRatio = choices_enum(trends.AspectRatio, name="AspectRatio", description="The shape of a video.")
QualityTier = choices_enum(
    trends.QualityTier, name="QualityTier", description="How much care (and credits) a video gets."
)
CameraMovement = choices_enum(
    trends.CameraMovement, name="CameraMovement", description="How the camera moves through the shot."
)

# Trends and the home screen.
TrendRequirement = choices_enum(
    trends.Requirement, name="TrendRequirement", description="What a trend needs from the user."
)
SectionSource = choices_enum(
    trends.SectionSource, name="SectionSource", description="Where the trends of a section come from."
)

# Generations.
GenerationStatus = choices_enum(
    generations.GenerationStatus, name="GenerationStatus", description="Where a generation is."
)
GenerationStage = choices_enum(
    generations.GenerationStage, name="GenerationStage", description="What a running generation is doing."
)
SpeedLane = choices_enum(
    generations.Lane,
    name="SpeedLane",
    description="How soon a video is made: INSTANT, or ECONOMY (cheaper, waits for free GPUs).",
)
GenerationFailureCode = choices_enum(
    generations.FAILURE_CODES, name="GenerationFailureCode", description="Why a generation did not succeed."
)

# Soul IDs.
CharacterStatus = choices_enum(
    characters.CharacterStatus, name="CharacterStatus", description="Where a Soul ID is."
)
CharacterPhotoStatus = choices_enum(
    characters.PhotoStatus, name="CharacterPhotoStatus", description="The verdict on one photo of a Soul ID."
)
PhotoReason = choices_enum(Reason, name="PhotoReason", description="Why a photo cannot be used.")

# Uploads.
UploadStatus = choices_enum(
    storage.UploadStatus,
    name="UploadStatus",
    description="Where an upload is: waiting for its file and check, usable, or refused.",
)
UploadRejectReason = choices_enum(
    storage.RejectReason, name="UploadRejectReason", description="Why an uploaded file was refused."
)

# Purchases.
ProductKind = choices_enum(
    purchases.ProductKind,
    name="ProductKind",
    description="A credit pack (consumable) or a plan (subscription).",
)
PlanStatus = choices_enum(
    SubscriptionState, name="PlanStatus", description="Where a plan stands, as its store reports it."
)
PurchaseStatus = choices_enum(
    purchases.PurchaseStatus, name="PurchaseStatus", description="What became of a purchase's credits."
)
