"""Chapter 9's app with one queue for every task, the images' included: what bench/thumbnails.py measures two against.

Run by bench/thumbnails.py inside ch09_thumbnails/, with bench/ on PYTHONPATH: `uvicorn one_queue:app` and
`celery -A one_queue.celery worker -Q celery`.
"""

from main import app, celery  # noqa: F401 (app: what uvicorn serves)

celery.conf.task_routes = {}  # no route: every task goes to the default queue, `celery`
