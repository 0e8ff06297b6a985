"""HTTP adapter: azure.functions in, azure.functions out. All logic lives in `shared`."""

from __future__ import annotations

import azure.functions as func

from shared.handler import handle_unassign


async def main(req: func.HttpRequest) -> func.HttpResponse:
    result = await handle_unassign(
        dict(req.headers), req.get_body(), req.route_params.get("deviceId") or None
    )
    return func.HttpResponse(body=result.body, status_code=result.status, headers=result.headers)
