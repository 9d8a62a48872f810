"""The list+watch loop: continues from the last resourceVersion, relists on 410 Gone, retries failures."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

from controllers.kube import KindNotServed
from controllers.watches import Watch
from tests.support.waiting import eventually


class Response:
    """A streamed watch response, as urllib3 gives it to the kubernetes client."""

    status = 200

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.body = b"".join(json.dumps(e).encode() + b"\n" for e in events)

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        yield self.body

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


class Server:
    """A scripted API server: each list and each watch request takes the next step of its script."""

    def __init__(self, lists: list[Any], watches: list[Any], stop: threading.Event) -> None:
        self.lists, self.watches, self.stop = lists, watches, stop
        self.requests: list[dict[str, Any]] = []

    def get(self, **kwargs: Any) -> Any:
        self.requests.append(kwargs)
        script = self.watches if kwargs.get("watch") else self.lists
        if not script:
            self.stop.set()
            return Response([]) if kwargs.get("watch") else self._list([], "99")
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    @staticmethod
    def _list(items: list[dict[str, Any]], version: str) -> Any:
        return SimpleNamespace(items=[SimpleNamespace(to_dict=lambda i=i: i) for i in items],
                               metadata=SimpleNamespace(resourceVersion=version))


def run(server: Server, stop: threading.Event, on_served: Any = None) -> tuple[Watch, list[str]]:
    seen: list[str] = []
    def list_with_version(api_version: str, kind: str, namespace: str | None,
                          selector: str | None) -> tuple[list[dict[str, Any]], str]:
        listed = server.get(namespace=namespace, label_selector=selector, _request_timeout=(5, 60))
        return [i.to_dict() for i in listed.items], str(listed.metadata.resourceVersion)

    kube = SimpleNamespace(resource=lambda *_: server, invalidate_discovery=lambda: None,
                           list_with_version=list_with_version)
    watch = Watch(kube, "apps/v1", "Deployment", "ns", lambda o: seen.append(o["metadata"]["name"]), stop,
                  label_selector="app.kubernetes.io/managed-by=tokenworks", on_served=on_served)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    eventually(lambda: not thread.is_alive(), timeout=20)
    return watch, seen


def test_a_watch_continues_from_the_last_version_and_relists_when_it_expired() -> None:
    stop = threading.Event()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                       "message": "too old resource version"}}
    server = Server(
        lists=[Server._list([obj("a", "10")], "10"), Server._list([obj("a", "10"), obj("b", "30")], "30")],
        watches=[Response([{"type": "MODIFIED", "object": obj("a", "11")}]),  # the server's timeout ends it
                 Response([gone])],
        stop=stop)
    watch, seen = run(server, stop)
    assert seen == ["a", "a", "a", "b"], "listed, changed, then relisted after 410"
    watch_requests = [r for r in server.requests if r.get("watch")]
    assert [r["resource_version"] for r in watch_requests[:3]] == ["10", "11", "30"]
    assert all(r["label_selector"] == "app.kubernetes.io/managed-by=tokenworks" for r in server.requests), \
        "children are filtered by the API server, not after streaming them"
    assert all(r["_request_timeout"] for r in server.requests), "no request may hang forever"
    assert watch.state.relists == 2


def test_an_api_server_outage_is_retried_and_reported_until_it_ends() -> None:
    stop = threading.Event()
    server = Server(lists=[ConnectionError("connection refused"), ConnectionError("connection refused"),
                           Server._list([obj("a", "5")], "5")], watches=[], stop=stop)
    watch, seen = run(server, stop)
    assert seen == ["a"]
    assert watch.state.connected and watch.state.failing_since is None
    assert watch.state.last_error == "connection refused"


def test_a_kind_served_again_asks_every_owner_to_reconcile() -> None:
    stop = threading.Event()
    served: list[bool] = []
    server = Server(lists=[KindNotServed("monitoring.coreos.com/v1", "PodMonitor"), Server._list([], "7")],
                    watches=[], stop=stop)
    watch, seen = run(server, stop, on_served=lambda: served.append(True))
    assert served == [True], "no PodMonitor exists yet to say the CRD is back: the owners are asked"
    assert seen == [] and not watch.state.missing
