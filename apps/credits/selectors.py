from .models import Wallet


def credits_balance(*, user) -> int:
    return Wallet.objects.filter(user=user).values_list("balance", flat=True).first() or 0


def wallet_state(*, user) -> tuple[int, int, int]:
    """(balance, held, version) of the user's wallet; zeros before the first entry."""
    row = Wallet.objects.filter(user=user).values_list("balance", "held", "version").first()
    return row or (0, 0, 0)
