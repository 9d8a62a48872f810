"""Several ModelDeployments' pods as emulator twins, scraped as a PodMonitor would, and open-loop load on them.

``Kubelet`` stands in for the kubelet of every replica: it keeps one emulator process per replica of each
Deployment, started from the Deployment's own pod template and ConfigMap as the API server holds them, on its
own loopback address, and lists them as Prometheus targets with the labels a PodMonitor gives (``namespace``,
``pod``, ``container``, ``endpoint``) plus the ModelDeployment label it copies.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
from collections.abc import Callable, Sequence

import httpx
from kubernetes import client

from inference_pods.repository import REQUEST_SHAPE
from tests.support.controlplane import ControlPlane
from tests.support.emulator import EmulatorProcess
from tests.support.prometheus import PrometheusServer

DEPLOYMENT_LABEL = "tokenworks_dev_model_deployment"


class Kubelet:
    def __init__(self, plane: ControlPlane, prometheus: PrometheusServer, namespace: str, names: Sequence[str],
                 job: str | None = None, emulator_args: Sequence[str] = ("--load-seconds=1",)) -> None:
        self.plane, self.prometheus, self.namespace, self.job = plane, prometheus, namespace, job
        self.names = list(names)
        self.emulator_args = list(emulator_args)
        self.emulators: dict[str, list[EmulatorProcess]] = {name: [] for name in names}
        self.subnet = random.randrange(1, 250)  # pod addresses 127.<subnet>.<n>.<m>, apart from other runs
        self.addresses = (f"127.{self.subnet}.{i // 250}.{i % 250 + 2}" for i in itertools.count())
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Kubelet:
        self.thread.start()
        return self

    def _sync(self, apps: client.AppsV1Api, core: client.CoreV1Api, name: str) -> None:
        try:
            deployment = apps.api_client.sanitize_for_serialization(
                apps.read_namespaced_deployment(name, self.namespace))
            config = core.read_namespaced_config_map(f"{name}-engine", self.namespace).data
        except client.ApiException:
            return
        want = deployment["spec"]["replicas"] or 0
        running = self.emulators[name]
        while len(running) < want and not self.stop.is_set():
            emulator = EmulatorProcess.from_pod(deployment["spec"]["template"], config, next(self.addresses),
                                                self.emulator_args).start()
            with self.lock:
                running.append(emulator)
        while len(running) > want:
            with self.lock:
                emulator = running.pop()
            emulator.stop()

    def _run(self) -> None:
        api = self.plane.api_client()
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        while not self.stop.wait(0.5):
            for name in self.names:
                self._sync(apps, core, name)
            with self.lock:
                groups = [([e.metrics_target], {"namespace": self.namespace, DEPLOYMENT_LABEL: name,
                                                "pod": f"{name}-{i}", "container": "triton", "endpoint": "metrics"})
                          for name, running in self.emulators.items() for i, e in enumerate(running)]
            self.prometheus.set_targets(groups, self.job)

    def urls(self, name: str) -> list[str]:
        with self.lock:
            return [e.url for e in self.emulators[name]]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(40)
        for running in self.emulators.values():
            for emulator in running:
                emulator.stop()


class Load:
    """Open-loop streaming requests at a settable rate, round-robin over one deployment's running replicas
    (``urls`` lists them), to the model its backend serves (the LLM API's ``tensorrt_llm``, the engine path's
    ``ensemble``)."""

    def __init__(self, urls: Callable[[], list[str]], backend: str, max_tokens: int = 64) -> None:
        self.urls, self.rate, self.stop = urls, 0.0, threading.Event()
        self.model, limit, stream = REQUEST_SHAPE[backend]
        self.body = {"text_input": "w " * 200, limit: max_tokens, stream: True}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self, rate: float) -> Load:
        self.rate = rate
        self.thread.start()
        return self

    def _send(self, url: str) -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(
                "POST", f"{url}/v2/models/{self.model}/generate_stream", json=self.body, timeout=30) as response:
            for _ in response.iter_lines():
                pass

    def _run(self) -> None:
        counter = itertools.count()
        while not self.stop.is_set():
            urls = self.urls()
            if self.rate <= 0 or not urls:
                self.stop.wait(0.1)
                continue
            threading.Thread(target=self._send, args=(urls[next(counter) % len(urls)],), daemon=True).start()
            self.stop.wait(1 / self.rate)  # open-loop pacing, ended at once by stop

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
