from .models import Wallet


def credits_balance(*, user) -> int:
    return Wallet.objects.filter(user=user).values_list("balance", flat=True).first() or 0


def wallet_state(*, user) -> tuple[int, int]:
    """(balance, held) of the user's wallet; (0, 0) before the first entry."""
    row = Wallet.objects.filter(user=user).values_list("balance", "held").first()
    return row or (0, 0)
