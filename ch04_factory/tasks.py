"""The tasks. @shared_task binds them to no app: they run on the current one, which create_app() configures."""

import math
from time import sleep

from celery import shared_task


@shared_task
def divide(x, y):
    sleep(5)  # stands in for slow work, so you can watch the task go from PENDING to SUCCESS
    quotient = x / y
    if math.isinf(quotient):  # 1e308 / 1e-308: JSON has no Infinity to store it as
        raise OverflowError(f"{x} / {y} is too large for a float")
    return quotient
