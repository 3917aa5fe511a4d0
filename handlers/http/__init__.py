"""The browser and service side over HTTP: the consent flow's pages, the API, metrics, health, and the error page."""
