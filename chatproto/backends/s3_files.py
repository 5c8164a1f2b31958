"""Shared files' bytes in an S3-compatible bucket: the cluster's
:class:`~chatproto.backends.files.FileStore` (``--files s3://bucket``), so
that every node serves every file.

A blob is the object ``<prefix><digest>``. botocore blocks on the network,
so every call runs on a pool of worker threads of this store's own: a slow
bucket then holds up only downloads, never the reactor, nor the reactor's
own pool (the history's checkpoints, name lookups). Where the bucket is
and who may use it come from the standard environment variables; the
bucket is the operator's to create: one that is missing fails
:meth:`S3FileStore.check`, rather than be made in some default place.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from chatproto.backends.digest_order import DigestOrder
from chatproto.backends.disk_files import checked_digest, checked_range
from chatproto.backends.files import FileStoreError

T = TypeVar("T")

#: Calls to the bucket at once (threads, and botocore's connections).
S3_THREADS = 8

#: Answers a missing object gets, by S3 and its imitators (a HEAD's is a
#: bare 404, the same for a missing bucket: check() tells those apart).
_MISSING = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"404", "NoSuchBucket", "NotFound"}


def parse_bucket(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, prefix); a prefix ends with ``/``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{url!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{url!r}: no user, query or fragment here (keys come from the environment)")
    prefix = parts.path.strip("/")
    return parts.netloc, prefix + "/" if prefix else ""


def s3_client(environ: Mapping[str, str], threads: int = S3_THREADS) -> Any:
    """A botocore S3 client from ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
    ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (unset ones: botocore's
    own search, as for any AWS tool). Made once, at start: loading its
    service model takes a moment."""
    import botocore.config  # type: ignore[import-untyped]
    import botocore.session  # type: ignore[import-untyped]

    endpoint = environ.get("AWS_ENDPOINT_URL") or None
    config = botocore.config.Config(
        max_pool_connections=threads,
        connect_timeout=5,
        read_timeout=30,
        retries={"mode": "standard", "max_attempts": 3},
        # A custom endpoint (MinIO, Ceph, Garage...) is addressed by path,
        # and may not know the newer default checksums.
        s3={"addressing_style": "path" if endpoint else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or "us-east-1",
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
        config=config,
    )


class _DaemonThread(threading.Thread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, daemon=True, **kwargs)


class _Threads(ThreadPool):
    """Daemon threads: a call stuck on the network never keeps the process from exiting."""

    threadFactory = _DaemonThread


def s3_pool(reactor: IReactorCore, threads: int = S3_THREADS) -> ThreadPool:
    """A pool of the store's own, started with the reactor and stopped at its shutdown."""
    pool = _Threads(0, threads, "s3-files")
    reactor.callWhenRunning(pool.start)
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    return pool


def _code(error: BaseException) -> str:
    """The error code of a botocore ClientError ("" for any other error)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


class S3FileStore:
    """Blobs as objects of ``bucket`` under ``prefix``, through ``client``
    (a botocore S3 client, thread-safe), on ``pool``'s threads."""

    def __init__(
        self, bucket: str, prefix: str, client: Any, reactor: IReactorThreads, pool: ThreadPool
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client
        self._reactor = reactor
        self._pool = pool
        self._order = DigestOrder()

    @classmethod
    def from_url(
        cls, url: str, reactor: Any, environ: Mapping[str, str] = os.environ, threads: int = S3_THREADS
    ) -> S3FileStore:
        """The store ``--files s3://bucket[/prefix]`` names, configured by ``environ``."""
        bucket, prefix = parse_bucket(url)
        return cls(bucket, prefix, s3_client(environ, threads), reactor, s3_pool(reactor, threads))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, digest: str) -> str:
        return self.prefix + digest

    def _thread(self, what: str, work: Callable[[], T]) -> Deferred[T]:
        def failed(f: Failure) -> Failure:
            if f.check(FileStoreError):
                return f
            return Failure(FileStoreError(f"can't {what} in {self}: {f.value}"))

        return deferToThreadPool(self._reactor, self._pool, work).addErrback(failed)

    def _blob(self, digest: str, what: str, work: Callable[[str], T], ordered: bool = False) -> Deferred[T]:
        """``work(key)`` on a thread; a change (``ordered``) after the digest's earlier changes."""
        try:
            key = self.key(checked_digest(digest))
        except FileStoreError as e:
            return fail(e)
        if not ordered:
            return self._thread(f"{what} {digest}", lambda: work(key))
        return self._order.run(digest, lambda: self._thread(f"{what} {digest}", lambda: work(key)))

    def _head(self, key: str) -> int | None:
        """The object's size, None if it is missing (on a worker thread)."""
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            if _code(e) in _MISSING:
                return None
            raise
        return int(answer["ContentLength"])

    def put(self, digest: str, path: str) -> Deferred[None]:
        def upload(key: str) -> None:
            if self._head(key) is not None:
                return
            with open(path, "rb") as body:  # botocore streams it from the file
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentLength=os.fstat(body.fileno()).st_size,
                    ContentType="application/octet-stream",
                )

        return self._blob(digest, "keep", upload, ordered=True)

    def size(self, digest: str) -> Deferred[int | None]:
        return self._blob(digest, "measure", self._head)

    def read(self, digest: str, offset: int, length: int) -> Deferred[bytes]:
        try:
            wanted = checked_range(offset, length)
        except FileStoreError as e:
            return fail(e)

        def get(key: str) -> bytes:
            if wanted == 0:
                if self._head(key) is None:
                    raise FileStoreError(f"no blob {digest} in {self}")
                return b""
            try:
                answer = self._client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + wanted - 1}"
                )
            except Exception as e:
                if _code(e) == "InvalidRange":  # at or past the end (an empty blob too)
                    return b""
                if _code(e) in _MISSING:
                    raise FileStoreError(f"no blob {digest} in {self}") from None
                raise
            body = answer["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            return data[:wanted]

        return self._blob(digest, "read", get)

    def delete(self, digest: str) -> Deferred[None]:
        def remove(key: str) -> None:
            self._client.delete_object(Bucket=self.bucket, Key=key)

        return self._blob(digest, "delete", remove, ordered=True)

    def check(self) -> Deferred[None]:
        """The bucket exists and answers these keys; a missing one is the
        operator's to create."""

        def head() -> None:
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except Exception as e:
                if _code(e) in _NO_BUCKET:
                    raise FileStoreError(
                        f"no bucket {self.bucket!r} at {self._client.meta.endpoint_url}: create it first"
                    ) from None
                if _code(e) in ("403", "AccessDenied", "Forbidden"):
                    raise FileStoreError(
                        f"bucket {self.bucket!r} at {self._client.meta.endpoint_url} refuses these keys"
                        " (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
                    ) from None
                raise

        return self._thread("reach the bucket", head)
