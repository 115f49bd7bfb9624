from collections.abc import AsyncIterator
from typing import Any, Optional, Union

from .async_base_client import AsyncBaseClient
from .base_model import UNSET, UnsetType
from .cancel_job import CancelJob
from .create_webhook_endpoint import CreateWebhookEndpoint
from .delete_job import DeleteJob
from .enums import JobStatus
from .generate_speech import GenerateSpeech
from .get_download import GetDownload
from .get_job import GetJob
from .input_types import CreateWebhookEndpointInput, GenerateSpeechInput
from .job_updates import JobUpdates
from .list_jobs import ListJobs
from .trigger_webhook_event import TriggerWebhookEvent
from .webhook_endpoints import WebhookEndpoints
from .webhook_events import WebhookEvents


def gql(q: str) -> str:
    return q


class GeneratedAsyncClient(AsyncBaseClient):
    async def get_job(
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
        response = await self.execute(
            query=query, operation_name="GetJob", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return GetJob.model_validate(data)

    async def get_download(self, id: str, **kwargs: Any) -> GetDownload:
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
        response = await self.execute(
            query=query, operation_name="GetDownload", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return GetDownload.model_validate(data)

    async def list_jobs(
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
        response = await self.execute(
            query=query, operation_name="ListJobs", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return ListJobs.model_validate(data)

    async def generate_speech(
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
        response = await self.execute(
            query=query, operation_name="GenerateSpeech", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return GenerateSpeech.model_validate(data)

    async def cancel_job(self, id: str, **kwargs: Any) -> CancelJob:
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
        response = await self.execute(
            query=query, operation_name="CancelJob", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return CancelJob.model_validate(data)

    async def delete_job(self, id: str, **kwargs: Any) -> DeleteJob:
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
        response = await self.execute(
            query=query, operation_name="DeleteJob", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return DeleteJob.model_validate(data)

    async def webhook_endpoints(self, **kwargs: Any) -> WebhookEndpoints:
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
        response = await self.execute(
            query=query,
            operation_name="WebhookEndpoints",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return WebhookEndpoints.model_validate(data)

    async def create_webhook_endpoint(
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
        response = await self.execute(
            query=query,
            operation_name="CreateWebhookEndpoint",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return CreateWebhookEndpoint.model_validate(data)

    async def trigger_webhook_event(
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
        response = await self.execute(
            query=query,
            operation_name="TriggerWebhookEvent",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return TriggerWebhookEvent.model_validate(data)

    async def job_updates(self, id: str, **kwargs: Any) -> AsyncIterator[JobUpdates]:
        query = gql("""
            subscription JobUpdates($id: ID!) {
              jobUpdates(id: $id) {
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
        variables: dict[str, object] = {"id": id}
        async for data in self.execute_ws(
            query=query, operation_name="JobUpdates", variables=variables, **kwargs
        ):
            yield JobUpdates.model_validate(data)

    async def webhook_events(
        self,
        event_types: Union[Optional[list[str]], UnsetType] = UNSET,
        after: Union[Optional[str], UnsetType] = UNSET,
        **kwargs: Any,
    ) -> AsyncIterator[WebhookEvents]:
        query = gql("""
            subscription WebhookEvents($eventTypes: [String!], $after: ID) {
              webhookEvents(eventTypes: $eventTypes, after: $after) {
                id
                type
                timestamp
                body
              }
            }
            """)
        variables: dict[str, object] = {"eventTypes": event_types, "after": after}
        async for data in self.execute_ws(
            query=query, operation_name="WebhookEvents", variables=variables, **kwargs
        ):
            yield WebhookEvents.model_validate(data)
