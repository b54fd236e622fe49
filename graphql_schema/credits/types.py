import strawberry


@strawberry.type(description="The signed-in user's credits.")
class Wallet:
    balance: int = strawberry.field(description="Credits that can be spent now.")
    held: int = strawberry.field(description="Credits reserved for work in progress.")
