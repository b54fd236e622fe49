import strawberry


@strawberry.input
class RequestUploadsInput:
    count: int = strawberry.field(description="How many files to send (1 to 20).")
    content_type: str = strawberry.field(
        description="The type of every file: image/jpeg, image/png, image/heic or image/webp."
    )
