"""``GET /downloads/{token}``: the local backend's signed, expiring, range-capable file route."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from service.db import session_scope
from service.jobs.service import expire_missing_artifact
from service.storage.factory import get_storage
from service.storage.local import LocalStorage
from service.storage.tokens import TokenExpired, TokenInvalid

router = APIRouter()
DOWNLOAD_ROUTE = "/downloads/{token}"


@router.get(DOWNLOAD_ROUTE, include_in_schema=False)
def download(token: str) -> FileResponse:
    """Stream the file named by a valid token (Range supported); 403 tampered, 410 expired or deleted."""
    storage = get_storage()
    if not isinstance(storage, LocalStorage):
        raise HTTPException(404, "downloads are served by the storage backend's own URLs")
    try:
        grant = storage.tokens.check(token)
    except TokenInvalid as exc:
        raise HTTPException(403, "invalid download token") from exc
    except TokenExpired as exc:
        raise HTTPException(410, str(exc)) from exc
    path = storage.path(grant.key)
    if not path.is_file():
        with session_scope() as session:  # the row outlived its file
            expire_missing_artifact(session, grant.key)
        raise HTTPException(410, "this artifact has been deleted")
    return FileResponse(
        path,
        media_type=grant.content_type,
        filename=grant.filename,
        headers={"Cache-Control": "private, max-age=0, no-store", "X-Content-Type-Options": "nosniff"},
    )
