import strawberry

from ..enums import Platform


@strawberry.input
class SignUpInput:
    email: str
    password: str


@strawberry.input
class SignInInput:
    email: str
    password: str


@strawberry.input
class RegisterDeviceInput:
    token: str = strawberry.field(description="The FCM registration token of this install.")
    platform: Platform
    app_version: str
    locale: str | None = None
