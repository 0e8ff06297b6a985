"""HTTP adapter: azure.functions in, azure.functions out. All logic lives in `shared`."""

from __future__ import annotations

from urllib.parse import urlsplit

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
        # POST /UnassignUser/ (a trailing slash, which the host's routing matches like none) is
        # the connector's UnassignUserBySerialNumber: it takes serialNumber alone.
        serial_only = device_id is None and urlsplit(req.url).path.endswith("/")
        result = await handle_unassign(
            dict(req.headers), req.get_body(), device_id, params, serial_only=serial_only
        )
    return func.HttpResponse(body=result.body, status_code=result.status, headers=result.headers)
