"""The document reader: says when a document is laid on the glass and taken away, and
hands the lane stable, sharp frames of the page.

Chosen by URL, like every device, so the lane never knows which reader it has:

* ``folder:/path`` — a full-page reader that drops one image per document into a folder
  (:class:`~hardware.docreader.folder.FolderDocumentReader`);
* anything else — a document camera, opened with :func:`hardware.camera.open_camera`
  (a camera index, ``/dev/videoN``, ``rtsp://…``, ``http://…`` MJPEG, a file), watched by
  :class:`~hardware.docreader.camera.CameraDocumentReader`.

:mod:`hardware.docreader.mrz` holds ICAO 9303's machine readable zone (layouts, check
digits, parsing): it is the document's own data format, which every reader SDK returns.

The backends are imported when asked for, so ``from hardware.docreader import mrz`` does
not pull in a camera stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hardware.docreader.api import (
    READER_UNAVAILABLE,
    DocumentReader,
    Placement,
    ReaderHandler,
    ReaderNotice,
    ReaderNoticeKind,
)

if TYPE_CHECKING:
    from hardware.docreader.camera import GlassSettings

FOLDER_SCHEME = "folder:"


def open_document_reader(url: str, settings: GlassSettings | None = None) -> DocumentReader:
    """The reader ``url`` names, not started yet (``start()`` it; it never raises for a
    source that is absent, its ``health`` says so). Raises ValueError for a URL that
    names no reader. ``settings`` tune a camera-based reader."""
    url = url.strip()
    if not url:
        raise ValueError("no document reader given (folder:/path, or the document "
                         "camera's URL)")
    if url.startswith(FOLDER_SCHEME):
        path = url[len(FOLDER_SCHEME):]
        if path.startswith("//"):  # folder:///srv/pages, as a file URL would be written
            path = path[2:]
        if not path:
            raise ValueError(f"{url!r}: folder: needs a path (folder:/srv/reader/out)")
        from hardware.docreader.folder import FolderDocumentReader

        return FolderDocumentReader(path)
    from hardware.camera import open_camera
    from hardware.docreader.camera import CameraDocumentReader

    return CameraDocumentReader(open_camera(url), settings)


__all__ = ["READER_UNAVAILABLE", "DocumentReader", "Placement", "ReaderHandler",
           "ReaderNotice", "ReaderNoticeKind", "open_document_reader"]
