"""The web page templates and assets of genlab/web, shared by the report and the explorer."""

from __future__ import annotations


def asset(name: str):
    """A file of genlab/web, to be put in the page as it is (CSS, JavaScript)."""
    from importlib.resources import files

    from markupsafe import Markup

    return Markup(files("genlab").joinpath("web", name).read_text())


def page(name: str):
    """A Jinja2 template of genlab/web, HTML-escaping every value put in it."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("genlab", "web"), autoescape=select_autoescape(["html", "j2"])).get_template(name)
