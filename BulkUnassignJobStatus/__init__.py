"""HTTP adapter for a job's status URL: anonymous, since the URL itself is the credential
(a read capability; see shared.jobs.api). Logic in `shared.jobs`, imported on the first call."""

from __future__ import annotations

import azure.functions as func


async def main(req: func.HttpRequest) -> func.HttpResponse:
    from shared.jobs.api import handle_status

    result = await handle_status(
        dict(req.headers), req.route_params["jobId"], req.route_params["capability"]
    )
    return func.HttpResponse(body=result.body, status_code=result.status, headers=result.headers)
