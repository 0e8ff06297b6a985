"""HTTP adapter for bulk unassign: azure.functions in and out. All logic lives in `shared`."""

from __future__ import annotations

import azure.functions as func

from shared.startup import loading

with loading():  # what this loads stays for the life of the worker (shared.startup)
    from shared.handler import handle_bulk


async def main(req: func.HttpRequest) -> func.HttpResponse:
    result = await handle_bulk(dict(req.headers), req.get_body(), dict(req.params))
    return func.HttpResponse(body=result.body, status_code=result.status, headers=result.headers)
