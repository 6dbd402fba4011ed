"""Fixtures for the systemd tests: one booted machine per module, and a Hub stand-in it can reach."""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator

import pytest
from containers.podman import podman_session, unavailable
from fake_hub.server import HubStandIn

from systemd.booted import Machine, boot, copy_checkout, image_for, rootfs_tar, wheelhouse


@pytest.fixture(scope="module")
def hub() -> Iterator[HubStandIn]:
    """The Hub stand-in on 127.0.0.1: the machine shares this host's network, so it is reachable."""
    with HubStandIn().start() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """A booted systemd machine with /src (a copy of this checkout) and /wheels; removed afterwards."""
    with podman_session("sd") as pm:
        tar = rootfs_tar()
        if isinstance(tar, str):
            unavailable(tar)
            raise AssertionError("unreachable")
        src = copy_checkout(tmp_path_factory.mktemp("src"))
        try:
            yield boot(pm, image_for(pm, tar), src=src, wheels=wheelhouse())
        finally:
            shutil.rmtree(src, ignore_errors=True)  # written by root inside: pip's build/ and egg-info


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, add the service's recent journal to the report: the machine is gone afterwards."""
    report = yield
    machine = getattr(item, "funcargs", {}).get("machine")
    if report.failed and isinstance(machine, Machine):
        journal = machine.sh("journalctl -u embed-launcher.service -n 60 --no-pager", check=False).stdout
        report.sections.append(("journal of embed-launcher.service", journal))
    return report
