"""HTTP adapter that cancels a bulk job (DELETE). Logic in `shared.jobs`, imported on first call."""

from __future__ import annotations

import azure.functions as func


async def main(req: func.HttpRequest) -> func.HttpResponse:
    from shared.jobs.api import handle_cancel

    result = await handle_cancel(dict(req.headers), req.route_params["jobId"], dict(req.params))
    return func.HttpResponse(body=result.body, status_code=result.status, headers=result.headers)
