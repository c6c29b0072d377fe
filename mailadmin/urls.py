from django.contrib.auth import views as auth_views
from django.urls import path

from .views import admin, auth, domains, jobs

app_name = "mailadmin"

urlpatterns = [
    path("", domains.domain_list, name="domain_list"),
    path("domains/add/", domains.domain_add, name="domain_add"),
    path("domains/<int:domain_id>/", domains.domain_detail, name="domain_detail"),
    path("domains/<int:domain_id>/settings/", domains.domain_settings, name="domain_settings"),
    path("domains/<int:domain_id>/dkim/", domains.domain_dkim, name="domain_dkim"),
    path("domains/<int:domain_id>/delete/", domains.domain_delete, name="domain_delete"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("jobs/<int:job_id>/", jobs.job_status, name="job_status"),
    path("audit/", jobs.audit_list, name="audit_list"),
    path("users/", admin.user_list, name="user_list"),
    path("users/add/", admin.user_add, name="user_add"),
    path("settings/server/", admin.server_settings, name="server_settings"),
]
