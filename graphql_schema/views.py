"""The HTTP endpoint: Strawberry's async Django view with bearer-token auth.

CSRF-exempt on purpose: the API authenticates with bearer tokens only, never session cookies, so a
cross-site request carries no credentials. Multipart uploads stay off (uploads go to storage directly).
"""

from __future__ import annotations

from cross_web import HTTPException
from django.conf import settings
from django.views.decorators.csrf import csrf_exempt
from strawberry.django.views import AsyncGraphQLView
from strawberry.schema.exceptions import InvalidOperationTypeError

from .context import Context, context_auth
from .schema import schema


class GraphQLView(AsyncGraphQLView):
    async def get_context(self, request, response) -> Context:
        user, token_rejected = await context_auth(request.headers.get("Authorization"))
        return Context(
            request=request,
            response=response,
            user=user,
            token_rejected=token_rejected,
            request_id=getattr(request, "request_id", ""),
            client_ip=request.META.get("REMOTE_ADDR", ""),
        )

    async def execute_single(self, *, request_adapter, **kwargs):
        # GraphQL over HTTP: a mutation sent with GET is 405 Method Not Allowed (Strawberry answers 400).
        try:
            return await super().execute_single(request_adapter=request_adapter, **kwargs)
        except HTTPException as exc:
            if request_adapter.method == "GET" and isinstance(exc.__cause__, InvalidOperationTypeError):
                raise HTTPException(405, exc.reason) from exc
            raise

    async def dispatch(self, request, *args, **kwargs):
        response = await super().dispatch(request, *args, **kwargs)
        if response.status_code == 405:
            response["Allow"] = "GET, POST"
        return response


graphql_view = csrf_exempt(
    GraphQLView.as_view(
        schema=schema,
        graphql_ide="graphiql" if settings.GRAPHQL_IDE else None,
        allow_queries_via_get=True,
        multipart_uploads_enabled=False,
    )
)
