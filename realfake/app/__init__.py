"""The web app: settings, serving (uploads in, answers and heatmaps out), the page's words and the
Flask routes.
"""
