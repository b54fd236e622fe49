import strawberry


@strawberry.input
class RequestUploadsInput:
    count: int = strawberry.field(description="How many files to send (1 to 20).")
    content_type: str = strawberry.field(
        description="The type of every file: image/jpeg, image/png, image/heic or image/webp."
    )
    character_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The Soul ID the photos are for. It must be yours and have your consent recorded "
        "(NotFound, ConsentRequired otherwise). Leave it out for a generation selfie.",
    )
