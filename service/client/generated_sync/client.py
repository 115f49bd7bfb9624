from typing import Any, Optional, Union

from .base_client import BaseClient
from .base_model import UNSET, UnsetType
from .cancel_job import CancelJob
from .create_webhook_endpoint import CreateWebhookEndpoint
from .delete_job import DeleteJob
from .enums import JobStatus
from .generate_speech import GenerateSpeech
from .get_download import GetDownload
from .get_job import GetJob
from .input_types import CreateWebhookEndpointInput, GenerateSpeechInput
from .list_jobs import ListJobs
from .trigger_webhook_event import TriggerWebhookEvent
from .webhook_endpoints import WebhookEndpoints


def gql(q: str) -> str:
    return q


class GeneratedSyncClient(BaseClient):
    def get_job(
        self,
        id: str,
        wait_seconds: Union[Optional[int], UnsetType] = UNSET,
        **kwargs: Any,
    ) -> GetJob:
        query = gql("""
            query GetJob($id: ID!, $waitSeconds: Int) {
              job(id: $id, waitSeconds: $waitSeconds) {
                ...JobFields
              }
            }

            fragment JobFields on Job {
              id
              kind
              status
              progress
              message
              attempt
              createdAt
              startedAt
              finishedAt
              estimatedCompletionAt
              idempotencyKey
              error {
                code
                message
                retryable
              }
              artifact {
                filename
                contentType
                byteSize
                sha256
              }
            }
            """)
        variables: dict[str, object] = {"id": id, "waitSeconds": wait_seconds}
        response = self.execute(
            query=query, operation_name="GetJob", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return GetJob.model_validate(data)

    def get_download(self, id: str, **kwargs: Any) -> GetDownload:
        query = gql("""
            query GetDownload($id: ID!) {
              job(id: $id) {
                id
                status
                artifact {
                  filename
                  contentType
                  byteSize
                  sha256
                  downloadUrl
                }
              }
            }
            """)
        variables: dict[str, object] = {"id": id}
        response = self.execute(
            query=query, operation_name="GetDownload", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return GetDownload.model_validate(data)

    def list_jobs(
        self,
        first: Union[Optional[int], UnsetType] = UNSET,
        after: Union[Optional[str], UnsetType] = UNSET,
        status: Union[Optional[list[JobStatus]], UnsetType] = UNSET,
        kind: Union[Optional[str], UnsetType] = UNSET,
        **kwargs: Any,
    ) -> ListJobs:
        query = gql("""
            query ListJobs($first: Int, $after: String, $status: [JobStatus!], $kind: String) {
              jobs(first: $first, after: $after, status: $status, kind: $kind) {
                nodes {
                  ...JobFields
                }
                pageInfo {
                  hasNextPage
                  endCursor
                }
              }
            }

            fragment JobFields on Job {
              id
              kind
              status
              progress
              message
              attempt
              createdAt
              startedAt
              finishedAt
              estimatedCompletionAt
              idempotencyKey
              error {
                code
                message
                retryable
              }
              artifact {
                filename
                contentType
                byteSize
                sha256
              }
            }
            """)
        variables: dict[str, object] = {
            "first": first,
            "after": after,
            "status": status,
            "kind": kind,
        }
        response = self.execute(
            query=query, operation_name="ListJobs", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return ListJobs.model_validate(data)

    def generate_speech(
        self, input: GenerateSpeechInput, **kwargs: Any
    ) -> GenerateSpeech:
        query = gql("""
            mutation GenerateSpeech($input: GenerateSpeechInput!) {
              generateSpeech(input: $input) {
                job {
                  ...JobFields
                }
                userErrors {
                  code
                  field
                  message
                  extensions
                }
              }
            }

            fragment JobFields on Job {
              id
              kind
              status
              progress
              message
              attempt
              createdAt
              startedAt
              finishedAt
              estimatedCompletionAt
              idempotencyKey
              error {
                code
                message
                retryable
              }
              artifact {
                filename
                contentType
                byteSize
                sha256
              }
            }
            """)
        variables: dict[str, object] = {"input": input}
        response = self.execute(
            query=query, operation_name="GenerateSpeech", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return GenerateSpeech.model_validate(data)

    def cancel_job(self, id: str, **kwargs: Any) -> CancelJob:
        query = gql("""
            mutation CancelJob($id: ID!) {
              cancelJob(id: $id) {
                job {
                  ...JobFields
                }
                userErrors {
                  code
                  field
                  message
                  extensions
                }
              }
            }

            fragment JobFields on Job {
              id
              kind
              status
              progress
              message
              attempt
              createdAt
              startedAt
              finishedAt
              estimatedCompletionAt
              idempotencyKey
              error {
                code
                message
                retryable
              }
              artifact {
                filename
                contentType
                byteSize
                sha256
              }
            }
            """)
        variables: dict[str, object] = {"id": id}
        response = self.execute(
            query=query, operation_name="CancelJob", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return CancelJob.model_validate(data)

    def delete_job(self, id: str, **kwargs: Any) -> DeleteJob:
        query = gql("""
            mutation DeleteJob($id: ID!) {
              deleteJob(id: $id) {
                id
                userErrors {
                  code
                  field
                  message
                  extensions
                }
              }
            }
            """)
        variables: dict[str, object] = {"id": id}
        response = self.execute(
            query=query, operation_name="DeleteJob", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return DeleteJob.model_validate(data)

    def webhook_endpoints(self, **kwargs: Any) -> WebhookEndpoints:
        query = gql("""
            query WebhookEndpoints {
              webhookEndpoints {
                id
                url
                description
                eventTypes
                enabled
              }
            }
            """)
        variables: dict[str, object] = {}
        response = self.execute(
            query=query,
            operation_name="WebhookEndpoints",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return WebhookEndpoints.model_validate(data)

    def create_webhook_endpoint(
        self, input: CreateWebhookEndpointInput, **kwargs: Any
    ) -> CreateWebhookEndpoint:
        query = gql("""
            mutation CreateWebhookEndpoint($input: CreateWebhookEndpointInput!) {
              createWebhookEndpoint(input: $input) {
                endpoint {
                  id
                  url
                  eventTypes
                  enabled
                }
                secret
                userErrors {
                  code
                  field
                  message
                  extensions
                }
              }
            }
            """)
        variables: dict[str, object] = {"input": input}
        response = self.execute(
            query=query,
            operation_name="CreateWebhookEndpoint",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return CreateWebhookEndpoint.model_validate(data)

    def trigger_webhook_event(
        self, event_type: str, **kwargs: Any
    ) -> TriggerWebhookEvent:
        query = gql("""
            mutation TriggerWebhookEvent($eventType: String!) {
              triggerWebhookEvent(eventType: $eventType) {
                eventId
                endpointCount
                userErrors {
                  code
                  field
                  message
                  extensions
                }
              }
            }
            """)
        variables: dict[str, object] = {"eventType": event_type}
        response = self.execute(
            query=query,
            operation_name="TriggerWebhookEvent",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return TriggerWebhookEvent.model_validate(data)
