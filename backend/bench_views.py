"""A plain Django JSON twin of the GraphQL `me { id email credits }` query, for bench/http_me.py.

Same data, same bearer-token auth and the same two database reads as the GraphQL resolver (the active user,
then the wallet balance), each through `sync_to_async` as there, so the difference measured is what
GraphQL (parse, validate, execute, serialize) costs. Mounted at /bench/me only with BENCH_ENDPOINTS=1.
"""

from __future__ import annotations

import base64

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse

from apps.accounts.selectors import user_get_active
from apps.accounts.tokens import access_token_user_id, bearer_token
from apps.credits.selectors import credits_balance


async def bench_me(request: HttpRequest) -> JsonResponse:
    token = bearer_token(request.headers.get("Authorization"))
    user_id = access_token_user_id(token) if token else None
    user = await sync_to_async(user_get_active)(user_id=user_id) if user_id else None
    if user is None:
        return JsonResponse({"data": {"me": None}})
    credits = await sync_to_async(credits_balance)(user=user)
    global_id = base64.b64encode(f"User:{user.pk}".encode()).decode()  # the Relay ID GraphQL returns
    return JsonResponse({"data": {"me": {"id": global_id, "email": user.email, "credits": credits}}})
