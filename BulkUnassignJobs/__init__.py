"""HTTP adapter that starts a bulk job (POST). Logic in `shared.jobs`.

The job modules and the storage SDKs are imported on the first call, not when the worker loads
the app: the single-device functions' cold start never pays for them.
"""

from __future__ import annotations

import azure.functions as func


async def main(req: func.HttpRequest) -> func.HttpResponse:
    from shared.jobs.api import handle_start

    result = await handle_start(dict(req.headers), req.get_body(), dict(req.params))
    return func.HttpResponse(body=result.body, status_code=result.status, headers=result.headers)
