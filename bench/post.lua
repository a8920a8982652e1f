-- wrk script: every request a POST of the JSON in $WRK_BODY
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
