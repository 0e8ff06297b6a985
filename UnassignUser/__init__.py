"""HTTP adapter: azure.functions in, azure.functions out. All logic lives in `shared`."""

from __future__ import annotations

import azure.functions as func

from shared.startup import loading

with loading():  # what this loads stays for the life of the worker (shared.startup)
    from shared.handler import HttpResult, handle_status, handle_unassign


async def main(req: func.HttpRequest) -> func.HttpResponse:
    device_id = req.route_params.get("deviceId") or None
    params = dict(req.params)
    result: HttpResult
    if req.method == "GET":
        result = await handle_status(dict(req.headers), device_id, params)
    else:
        result = await handle_unassign(dict(req.headers), req.get_body(), device_id, params)
    return func.HttpResponse(body=result.body, status_code=result.status, headers=result.headers)
