"""The problems of the WeChat platform's errors (``api.http.errors``): a used-up WeChat quota
and an unavailable content check are 503 with ``Retry-After``; a refused text is 422 with the
field and the label."""

from __future__ import annotations

from litestar import get
from litestar.testing import create_test_client

from api.adapters.wechat import WeChatQuotaExceeded
from api.http.errors import EXCEPTION_HANDLERS
from domain.moderation import ContentCheckUnavailable, ContentRejected


@get("/quota", sync_to_thread=False)
def quota() -> None:
    raise WeChatQuotaExceeded(
        "subscribeMessage.send errcode 45009", errcode=45009, retry_after=3600
    )


@get("/unavailable", sync_to_thread=False)
def unavailable() -> None:
    raise ContentCheckUnavailable("msgSecCheck gave no verdict within 3 s", retry_after=30)


@get("/rejected", sync_to_thread=False)
def rejected() -> None:
    raise ContentRejected("summary", "abuse")


def test_problems() -> None:
    with create_test_client(
        [quota, unavailable, rejected], exception_handlers=EXCEPTION_HANDLERS
    ) as client:
        response = client.get("/quota")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3600"
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["code"] == "wechat_quota_exceeded" and "45009" not in body["detail"]

        response = client.get("/unavailable")
        assert response.status_code == 503 and response.headers["retry-after"] == "30"
        assert response.json()["code"] == "content_check_unavailable"

        response = client.get("/rejected")
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "content_rejected"
        assert body["errors"] == [{"field": "summary", "label": "abuse"}]
        assert "summary" in body["detail"]
