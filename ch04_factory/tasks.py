"""The tasks. @shared_task binds them to no app: they run on the current one, which create_app() configures."""

import math
from time import sleep

from celery import shared_task


@shared_task
def divide(x, y):
    # Stands in for slow work, so that you can watch the task go from PENDING to SUCCESS.
    sleep(5)
    quotient = x / y
    # 1e308 / 1e-308 is inf, which JSON cannot store as a result: a clear error instead.
    if math.isinf(quotient):
        raise OverflowError(f"{x} / {y} is too large for a float")
    return quotient
