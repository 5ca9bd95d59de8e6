"""The page as a user sees it: elements found by role and accessible name (which proves the labels).

Chromium computes each element's ARIA role and accessible name (WebDriver's
``aria_role``/``accessible_name``), as a screen reader gets them; a label that
is missing or wrong makes ``find`` fail.  Ids (cockpit/README.md) are used only
to read values out of an element already found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from testbed.cockpit import Browser, CockpitWs

T = TypeVar("T")
# What the page showed when an element did not appear: for the failure's reader.
FAILURE_SHOTS = Path(__file__).resolve().parents[2] / "build" / "cockpit-test-failures"

# Elements that can have each role, so the search looks only at a few.
CANDIDATES = {
    "button": "button, [role=button]",
    "link": "a, [role=link]",
    "textbox": (
        "input:not([type]), input[type=text], input[type=search], input[type=password], textarea, "
        "[role=textbox]"
    ),
    "checkbox": "input[type=checkbox], [role=checkbox]",
    "switch": "input[type=checkbox], [role=switch]",
    "radio": "input[type=radio], [role=radio]",
    "combobox": "select, [role=combobox]",
    "table": "table, [role=table], [role=grid]",
    "progressbar": "[role=progressbar]",
    "heading": "h1, h2, h3, h4, [role=heading]",
    "alert": "[role=alert], .pf-v5-c-alert",
    "log": "[role=log]",
    "list": "ul, ol, [role=list]",
}


# Roles that count as the one asked for: PatternFly's tables are ARIA grids; a switch is a checkbox.
ROLES = {"table": ("table", "grid"), "switch": ("switch", "checkbox")}


class NotThere(AssertionError):
    pass


class Page:
    def __init__(self, browser: Browser, cockpit: CockpitWs, *, timeout: float = 30.0) -> None:
        self.browser = browser
        self.driver = browser.driver
        self.cockpit = cockpit
        self.timeout = timeout

    def open(self, route: str = "/") -> None:
        self.driver.get(f"{self.cockpit.url('vm2kvm')}#{route}")

    def wait(self, what: Callable[[], T | None], description: str, timeout: float | None = None) -> T:
        """Poll ``what`` until it gives something truthy; else fail naming ``description``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = what()
                if value:
                    return value
            except Exception as err:  # a stale or not yet rendered element: try again
                last = err
            time.sleep(0.2)
        slug = "".join(c if c.isalnum() else "-" for c in description)
        shot = FAILURE_SHOTS / f"{time.strftime('%H%M%S')}-{slug}.png"
        self.screenshot(shot)
        console = self.browser.console()
        raise NotThere(
            f"{description} did not appear (screenshot {shot}); last error {last!r}; console: {console}"
        )

    def find_now(self, role: str, name: str, *, exact: bool = True) -> Any:
        from selenium.webdriver.common.by import By

        for element in self.driver.find_elements(By.CSS_SELECTOR, CANDIDATES[role]):
            if not element.is_displayed() and role not in ("checkbox", "switch", "radio"):
                continue
            if element.aria_role not in ROLES.get(role, (role,)):
                continue
            label = " ".join(str(element.accessible_name).split())
            if label == name or (not exact and label.startswith(name)):
                return element
        return None

    def find(self, role: str, name: str, *, exact: bool = True, timeout: float | None = None) -> Any:
        try:
            return self.wait(lambda: self.find_now(role, name, exact=exact), f"{role} {name!r}", timeout)
        except NotThere as err:
            raise NotThere(f"{err}; {role} candidates (role, name): {self.candidates(role)}") from None

    def candidates(self, role: str) -> list[tuple[str, str]]:
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, CANDIDATES[role])
        return [(str(e.aria_role), str(e.accessible_name)[:60]) for e in found[:20]]

    def by_id(self, element_id: str, timeout: float | None = None) -> Any:
        from selenium.webdriver.common.by import By

        def found() -> Any:
            elements = self.driver.find_elements(By.ID, element_id)
            return elements[0] if elements else None

        return self.wait(found, f"#{element_id}", timeout)

    def text_of(self, element_id: str) -> str:
        return " ".join(str(self.by_id(element_id).text).split())

    def type_into(self, element: Any, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        element.click()
        element.send_keys(Keys.CONTROL, "a")
        element.send_keys(Keys.DELETE)
        element.send_keys(text)

    def keys(self, *keys: str) -> None:
        """Keys pressed on whatever has the focus, as a keyboard user does."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def tab_to(self, role: str, name: str, limit: int = 25) -> Any:
        """Press Tab until the focused element has ``role`` and ``name``; fail if none within
        ``limit`` presses (the element is not reachable by keyboard)."""
        from selenium.webdriver.common.keys import Keys

        for _ in range(limit):
            self.keys(Keys.TAB)
            active = self.driver.switch_to.active_element
            if (
                active.aria_role in ROLES.get(role, (role,))
                and " ".join(str(active.accessible_name).split()) == name
            ):
                return active
        raise AssertionError(f"{role} {name!r} is not reachable with Tab")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def alert(self, title: str, timeout: float | None = None) -> Any:
        """The PatternFly alert whose title a screen reader reads as "<Variant> alert: <title>"."""
        from selenium.webdriver.common.by import By

        def found() -> Any:
            for heading in self.driver.find_elements(By.CSS_SELECTOR, ".pf-v5-c-alert__title"):
                label = " ".join(str(heading.accessible_name).split())
                if heading.aria_role == "heading" and label.endswith(f"alert: {title}"):
                    return heading.find_element(
                        By.XPATH, "./ancestor::div[contains(@class,'pf-v5-c-alert')][1]"
                    )
            return None

        return self.wait(found, f"alert {title!r}", timeout)
