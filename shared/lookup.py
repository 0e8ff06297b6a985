"""Find the one Autopilot device with a serial number.

Graph has no `eq` on serialNumber, only `contains`, so the search is a substring match that we
narrow to exact, case-insensitive matches ourselves. Quirks survived here: a hyphenated serial
inside `contains` has been answered with 400, so we search the longest hyphen-free part instead;
`@odata.nextLink` is followed only while it stays on GRAPH_ENDPOINT and for a few pages, so a
short or odd serial cannot make us walk the whole tenant or follow a link somewhere else.
"""

from __future__ import annotations

from typing import Any

from shared.graph import AUTOPILOT, Call, GraphClient
from shared.graph_answer import GraphResponse, problem_for
from shared.problems import Failure, Problem
from shared.request import normalise_device_id

MAX_PAGES = 5
MAX_CANDIDATES = 10
# The fallback search term must still narrow the search; shorter parts are refused.
MIN_FALLBACK_TERM = 3


def odata_string(value: str) -> str:
    """An OData string literal: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def hyphen_free_part(serial: str) -> str:
    return max(serial.split("-"), key=len)


async def _first_page(graph: GraphClient, term: str, call: Call) -> GraphResponse:
    query = {"$filter": f"contains(serialNumber,{odata_string(term)})"}
    return await graph.call("GET", AUTOPILOT, call, params=query)


async def _all_pages(graph: GraphClient, response: GraphResponse, call: Call) -> list[Any]:
    items: list[Any] = []
    for page in range(1, MAX_PAGES + 1):
        if not response.ok:
            raise problem_for(response)
        body = response.body if isinstance(response.body, dict) else {}
        value = body.get("value")
        if not isinstance(value, list):
            raise Problem(Failure.GRAPH_ERROR, "Graph answered the device search without a list.")
        items += value
        link = body.get("@odata.nextLink")
        if not link:
            return items
        if not isinstance(link, str) or not graph.same_origin(link):
            raise Problem(
                Failure.GRAPH_ERROR,
                "Graph's next-page link for the serial number search leaves GRAPH_ENDPOINT; "
                "it was not followed.",
            )
        if page < MAX_PAGES:
            response = await graph.call("GET", link, call)
    raise Problem(
        Failure.AMBIGUOUS_SERIAL,
        f"The serial number search matched more than {MAX_PAGES} pages of devices; give the "
        "complete serial number or the Autopilot device id.",
    )


def _candidate(device: dict[str, Any]) -> dict[str, Any]:
    return {
        "deviceId": device.get("id"),
        "serialNumber": device.get("serialNumber"),
        "userPrincipalName": device.get("userPrincipalName") or None,
    }


async def find_by_serial(graph: GraphClient, serial: str, call: Call) -> str:
    """The Autopilot device id of the one device whose serial number is `serial`."""
    response = await _first_page(graph, serial, call)
    if response.status == 400 and "-" in serial:
        part = hyphen_free_part(serial)
        if len(part) < MIN_FALLBACK_TERM:
            raise Problem(
                Failure.GRAPH_ERROR,
                f"Graph refused to search for serial number {serial!r} and no part of it without "
                "hyphens is long enough to search instead; use the Autopilot device id.",
                graph_code=response.error().code,
                graph_request_id=response.request_id,
            )
        response = await _first_page(graph, part, call)
    wanted = serial.casefold()
    matches: dict[str, dict[str, Any]] = {}
    for device in await _all_pages(graph, response, call):
        if isinstance(device, dict) and str(device.get("serialNumber", "")).casefold() == wanted:
            matches[str(device.get("id"))] = device
    if not matches:
        raise Problem(
            Failure.DEVICE_NOT_FOUND,
            f"Intune has no Autopilot device with serial number {serial!r}.",
            extra={"serialNumber": serial},
        )
    if len(matches) > 1:
        candidates = [_candidate(d) for d in list(matches.values())[:MAX_CANDIDATES]]
        raise Problem(
            Failure.AMBIGUOUS_SERIAL,
            f"{len(matches)} Autopilot devices have serial number {serial!r}; nothing was "
            "changed. Choose one and send its deviceId.",
            extra={"serialNumber": serial, "candidates": candidates, "totalCount": len(matches)},
        )
    [device_id] = matches
    try:
        return normalise_device_id(device_id, "Graph's device id")
    except Problem:
        raise Problem(Failure.GRAPH_ERROR, "Graph answered a device without a valid id.") from None
