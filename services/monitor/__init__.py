"""The drift monitor (faust): feature drift, the predictions-labels join, live error rate."""
