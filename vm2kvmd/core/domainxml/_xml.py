"""The one helper every renderer module uses to add elements."""

from __future__ import annotations

from lxml import etree


def sub(
    parent: etree._Element, tag: str, text: str | None = None, **attrs: str | int | None
) -> etree._Element:
    """Append ``<tag attrs>text</tag>``; attributes with value None are left out, order is kept."""
    element = etree.SubElement(parent, tag)
    for name, value in attrs.items():
        if value is not None:
            element.set(name, str(value))
    if text is not None:
        element.text = text
    return element
