"""The tasks. @shared_task binds them to no app: they run on the current one, which create_app() configures."""
from time import sleep

from celery import shared_task


@shared_task
def divide(x, y):
    sleep(5)  # stands in for slow work, so you can watch the task go from PENDING to SUCCESS
    return x / y
