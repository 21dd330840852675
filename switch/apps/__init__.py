"""Apps deployed from git into the running switch: fetch (``git``), install and persist
(``store``), and the route table that picks the app for an INVITE (``routing``)."""

from .git import FetchError
from .routing import DEFAULT_APP_NAME, Route, RouteError, RouteTable
from .store import AppStore, DeployError, InstalledApp

__all__ = ["AppStore", "DEFAULT_APP_NAME", "DeployError", "FetchError", "InstalledApp", "Route", "RouteError",
           "RouteTable"]
